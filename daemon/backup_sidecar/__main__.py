"""Allow ``python -m backup_sidecar``."""

from backup_sidecar.cli import main

if __name__ == "__main__":
    main()
