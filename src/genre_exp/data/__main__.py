from genre_exp.data.commands import main

main()
