"""Command-line commands beyond the generated ones: folder tools of the style and enhancement families."""
