"""The studio behind `app.py`: its logic without Gradio (`session`) and what it needs as a shared server (`server`)."""
