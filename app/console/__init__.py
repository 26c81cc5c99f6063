"""The operations console's static files (HTML, CSS, ES modules), served at `/console` by
`app/api/controllers/console.py`; no build step and nothing fetched from elsewhere."""
