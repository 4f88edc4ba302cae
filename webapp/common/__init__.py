"""Project-wide building blocks: the Api/Blueprint/Schema subclasses, custom fields and the pager."""
