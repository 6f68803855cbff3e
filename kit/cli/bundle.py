"""`lugha bundle`."""
from ._common import not_available

HELP = "Inspect and verify a bundle (checksums, schema, graphs)."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("bundle", "built in the foundation issue (kit/manifest.py)")
