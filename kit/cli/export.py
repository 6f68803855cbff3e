"""`lugha export`."""
from ._common import not_available

HELP = "Export a run to ONNX/TFLite, quantize, gate on parity and accuracy, pack a bundle."


def configure(parser) -> None:
    parser.add_argument("rest", nargs="*", help="arguments, once this command exists")


run = not_available("export", "built in the export issue")
