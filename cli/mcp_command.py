"""`xmodal mcp`: serve one index to agents over the Model Context Protocol (stdio).

Registered in cli.app like `check`. Standard output belongs to the protocol: nothing else is
printed there. The `mcp` package comes with `pip install 'xmodal[mcp]'`.
"""

from __future__ import annotations

from xmodal.cli.options import DbUrlOpt, IndexOpt

__all__ = ["mcp"]


def mcp(
    index_dir: IndexOpt = None,
    db_url: DbUrlOpt = None,
) -> None:
    """Serve the index as MCP tools over stdio: search, similar, item, index_info."""
    from xmodal.indexer.errors import InvalidInputError

    try:
        from xmodal.cli.mcp_server import build_server
    except ImportError as e:
        raise InvalidInputError(
            f"the MCP server needs the 'mcp' package ({e.name} is missing): pip install 'xmodal[mcp]'"
        ) from e
    from xmodal.search import SearchEngine
    from xmodal.search.stats import index_info

    with SearchEngine.open(index_dir, db_url=db_url) as engine:  # a missing index fails here, before serving
        build_server(engine, lambda: index_info(index_dir, db_url)).run("stdio")
