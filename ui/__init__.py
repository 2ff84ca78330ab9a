"""The browser UI (Gradio); `python app.py` serves it. See ui/app.py."""
