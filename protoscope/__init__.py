"""protoscope's command line, above the two packages it drives: `models/` (training and
analysis, no HTTP) and `backend/` (the HTTP server). Neither of them imports this package."""
