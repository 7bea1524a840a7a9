"""The long-running part: the daemon's service, its scheduler, health watcher, control-socket
handler, metrics and HTTP endpoint. The one-shot parts (`jobs`, `cli`) never import it, except
the CLI's `run` command that starts it."""
