"""The data plane shared by every component: the event schema, its codec, the bus, settings."""
