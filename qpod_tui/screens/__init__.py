"""Modal screens: dialogs, forms, confirmations, help."""
