"""The CLI's commands by family; ``cli.parser`` wires each to its words."""
