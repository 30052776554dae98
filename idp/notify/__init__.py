"""Messages to people: email and SMS."""
