"""What the tests share: prerequisites (``prereqs``), what a run may leave behind
(``leaks``), the outside world a lab reaches (``world``), configs and booted workspaces
(``configs``), and the config generators of the property tests (``strategies``)."""
