"""`hotserve retrain`: captured rows + their labels -> a challenger trained from the production
version -> compared on the newest rows -> exported -> `hotserve release`."""
