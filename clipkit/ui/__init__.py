"""The browser UI (Gradio); `clipkit` serves it. See ui/app.py."""
