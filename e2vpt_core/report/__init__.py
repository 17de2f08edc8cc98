"""What the toolkit shows: plotly figures as pure functions (`figures`), drawn by the app's
pages and written into the shareable HTML report."""
