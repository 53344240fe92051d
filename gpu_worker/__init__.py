"""The worker process, on CPU and GPU nodes alike (the name is the design card's): the queue consumer
(`worker.py`), its render processes (`pool.py`), which backends this node runs (`backend_choice.py`) and the image
backends themselves (`backends/`: vips on the CPU; DALI and the tiles kernels on a GPU, behind one router)."""
