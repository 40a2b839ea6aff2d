"""Local sandbox: a MariaDB source, its GTID replica and an sshd on loopback."""
from sandbox.servers import MariaDB, Sandbox, Sshd, free_port, make_template

__all__ = ["MariaDB", "Sandbox", "Sshd", "free_port", "make_template"]
