"""Loopback fakes of every vendor API, as strict as the vendors: the tests use them and `siyu fakes` serves them."""
