"""The ``wsfixture`` command: its parser and commands (``main``), the CLI's persistent
workspaces and their supervisors, the hosts file block, and the demo."""
