"""`lugha quickstart`."""
from ._common import not_available

HELP = "The main job: demo data, then train/export/device tests as they land."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("quickstart", "built in the foundation issue")
