from lit_robust.cli import main

main()
