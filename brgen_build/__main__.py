from brgen_build.cli import main

main()
