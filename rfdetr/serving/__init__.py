"""``rfdetr serve``: exported models over the Open Inference Protocol v2 (KServe's
``ModelServer``). Needs the ``serve`` extra; importing this package imports none of it."""
