"""``python -m unionhub_kit <command>``: the operations CLI (see ``unionhub_kit.cli``)."""
import sys
import warnings

warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")
warnings.filterwarnings("ignore", category=DeprecationWarning)

from .cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
