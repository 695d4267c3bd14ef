"""What `xmodal train` runs: the projection head on frozen towers and the choice of its prior mix."""
