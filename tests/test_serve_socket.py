"""The listening socket `xmodal serve` binds: accepted connections must get TCP_NODELAY from asyncio,
or every keep-alive response's body waits for the client's delayed ACK of its headers."""

from __future__ import annotations

import asyncio
import socket

from xmodal.cli.serve_command import _bind


def test_connections_accepted_on_the_served_socket_have_nagle_off() -> None:
    listening = _bind("127.0.0.1", 0)
    port = listening.getsockname()[1]
    seen: list[int] = []

    async def main() -> None:
        def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            sock = writer.get_extra_info("socket")
            seen.append(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        server = await asyncio.start_server(on_connection, sock=listening)
        async with server:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            for _ in range(100):
                if seen:
                    break
                await asyncio.sleep(0.01)
            writer.close()

    asyncio.run(main())
    assert seen and seen[0] != 0
