"""`lugha serve`."""
from ._common import not_available

HELP = "Serve the offline field app for native-speaker testing."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("serve", "built in the field-app issue")
