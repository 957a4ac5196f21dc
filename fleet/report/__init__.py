"""What people read: markdown reports from Jinja2 templates, figures (PNG), the data card and the model card."""
