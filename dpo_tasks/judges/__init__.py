"""Judges: the offline rule judge and the API judges (Groq, Gemini), behind one interface."""
