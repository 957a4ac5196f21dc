"""The app layer: the `fleet` command and the local stack it starts (cli -> flows -> tasks -> fleet)."""
