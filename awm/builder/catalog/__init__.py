"""Read an AWM dataset into validated `ScenarioBundle`s: files, routes, seed database, solutions."""
