"""HttpClients: an adapter's HTTP clients kept between open() and aclose(), one per call in flight."""

from __future__ import annotations

import asyncio

import httpx

from channels.base import HttpClients


def _clients() -> tuple[HttpClients, list[httpx.AsyncClient]]:
    """HttpClients whose clients answer 200 without a network, and the list of every client it made."""
    made: list[httpx.AsyncClient] = []

    def make() -> httpx.AsyncClient:
        made.append(httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200))))
        return made[-1]

    return HttpClients(make), made


async def _get(http: HttpClients) -> httpx.AsyncClient:
    async with http.client() as client:
        assert (await client.get("http://vendor.test/")).status_code == 200
        await asyncio.sleep(0.01)  # still in flight while the other calls of a gather begin
        return client


def test_http_clients__kept_from_one_call_to_the_next_while_open() -> None:
    """Open: calls one after another share one client; aclose closes it."""
    http, made = _clients()

    async def main() -> None:
        http.open()
        assert await _get(http) is await _get(http)
        await http.aclose()

    asyncio.run(main())
    assert len(made) == 1 and made[0].is_closed


def test_http_clients__one_client_per_call_in_flight() -> None:
    """Calls in flight at the same time get a client each (a small connection pool each); both are kept."""
    http, made = _clients()

    async def main() -> None:
        http.open()
        first, second = await asyncio.gather(_get(http), _get(http))
        assert first is not second
        assert {id(await _get(http)), id(await _get(http))} <= {id(first), id(second)}
        await http.aclose()

    asyncio.run(main())
    assert len(made) == 2 and all(c.is_closed for c in made)


def test_http_clients__a_call_in_flight_at_close_finishes_then_its_client_closes() -> None:
    """aclose never cuts a call short: its client is closed when the call gives it back, not kept."""
    http, made = _clients()

    async def main() -> None:
        http.open()
        async with http.client() as client:
            await http.aclose()
            assert (await client.get("http://vendor.test/")).status_code == 200
        assert client.is_closed
        await _get(http)  # closed: a call makes its own client again

    asyncio.run(main())
    assert len(made) == 2 and all(c.is_closed for c in made)


def test_http_clients__not_open_each_call_makes_and_closes_its_own() -> None:
    """Without open() (an adapter used on its own), every call has its own client, closed after it."""
    http, made = _clients()

    async def main() -> None:
        assert await _get(http) is not await _get(http)

    asyncio.run(main())
    assert len(made) == 2 and all(c.is_closed for c in made)


def test_http_clients__another_event_loop_never_gets_a_kept_client() -> None:
    """A client kept on one event loop is never used on another (each asyncio.run has its own)."""
    http, made = _clients()

    async def keep() -> httpx.AsyncClient:
        http.open()
        return await _get(http)

    kept = asyncio.run(keep())
    other = asyncio.run(_get(http))
    assert other is not kept and other.is_closed and not kept.is_closed
    assert len(made) == 2
