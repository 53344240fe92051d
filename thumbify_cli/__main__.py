"""`thumbify` (the console script's entry point, `main`) and `python -m thumbify_cli`.

Light on purpose: a render process of `thumbify thumbnail` is spawned, and re-runs the console script as its own
`__main__`, which imports this module only; the app (typer, rich, every command) is imported when `main` runs.
"""


def main() -> None:
    from thumbify_cli.app import app

    app()


if __name__ == "__main__":
    main()
