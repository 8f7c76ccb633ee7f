"""The wiring: the `cx` command line, the runtime that assembles an exchange from its settings, the
node that runs stages and the API in one process, and the end-to-end benchmark."""
