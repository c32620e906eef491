"""Region masks for localized forgeries: category tables, annotation readers and the Stuff and Background rules."""
