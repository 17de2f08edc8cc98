"""What the toolkit shows and shares: plotly figures as pure functions (`figures`), drawn
by the app's pages and the report; what an accuracy is read against (`context`); a pruned
run's trade-off (`tradeoff`); stored and computed Poincaré views (`views`); the commands
that reproduce a run (`commands`); the environment (`environment`); and the
self-contained HTML report of runs and seed groups (`html`, `e2vpt report`)."""
