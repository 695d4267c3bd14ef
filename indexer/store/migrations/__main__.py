"""Developer entry point: `python -m xmodal.indexer.store.migrations revision -m "add x"` writes a
new numbered revision file into versions/ (then fill in upgrade/downgrade and bump HEAD)."""

from __future__ import annotations

import argparse
from pathlib import Path

from alembic import command
from alembic.script import ScriptDirectory

from xmodal.indexer.store.migrations import alembic_config


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m xmodal.indexer.store.migrations")
    sub = parser.add_subparsers(dest="command", required=True)
    revision = sub.add_parser("revision", help="write a new empty revision after the current head")
    revision.add_argument("-m", "--message", required=True)
    sub.add_parser("heads", help="print the newest revision")
    args = parser.parse_args()
    config = alembic_config()
    script = ScriptDirectory.from_config(config)
    if args.command == "heads":
        print(script.get_current_head())
        return
    number = f"{int(script.get_current_head() or '0') + 1:04d}"
    slug = "_".join(args.message.lower().split())[:40]
    config.set_main_option("file_template", f"{number}_{slug}")
    created = command.revision(config, message=args.message, rev_id=number)
    assert created is not None and not isinstance(created, list)  # one revision, no branches
    print(f"wrote {Path(created.path)}; set HEAD = {number!r} in {Path(__file__).with_name('__init__.py')}")


if __name__ == "__main__":
    main()
