"""The data the core and the brokers share: publications, channel history and its recovery
rules, presence tables, and the settings with their defaults. Pure: no I/O, nothing above it."""
