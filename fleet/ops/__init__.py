"""Running the fleet day to day: serving, the traffic log, drift monitoring, batch scoring, champion moves,
the leaderboard, exports and pre-flight checks."""
