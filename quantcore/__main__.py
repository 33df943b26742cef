from .cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn/forkserver re-imports the main module in a worker
    raise SystemExit(main())
