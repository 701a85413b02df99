"""ATB chat service: approval cards in Slack, signed votes from button clicks."""
