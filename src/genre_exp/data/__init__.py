"""The data layer, pure pandas: where data files are and how to read them (``files``), what
the data looks like (``layout``), cleaning and a run's data set (``load``, ``sampling``), and
what ``genre-exp data`` computes (``prepare``, ``download``, ``report``). Nothing here touches
MLflow, Keras or figures. Import the modules themselves: this package's face stays empty so
that the config schema can read ``layout`` without loading pandas."""
