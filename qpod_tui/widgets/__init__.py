"""The four views and the widgets they are made of."""
