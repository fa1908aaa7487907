from genre_exp.cli import main

main()
