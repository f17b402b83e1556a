"""A request's life: text -> semantic -> coarse -> fine -> codec, each stage a loop that yields
graph work (work.py) for the engine to run and gets the results sent back; pipeline.py chains
them, stream.py interleaves the fine stage and the codec with the coarse windows, longform.py
cuts long text into segments."""
