"""Using a trained model: preprocessing user images, prediction, export, and a layer-by-layer inspection."""
