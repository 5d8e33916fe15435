"""WeCom customer contact and WeChat official-account template messages, sharing one access-token cache."""
