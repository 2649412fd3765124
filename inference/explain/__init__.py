"""Decision support: the ACTIVE model's top classes for a stored image (`opinion`), its Grad-CAM overlay cached on
disk (`heatmaps`), who may see them (`policy`) and the overlay's URL (`links`)."""
