// The engine's subcommands; each takes the arguments after its name and returns the exit code.
#pragma once
int cmd_init(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_logprobs(int argc, char **argv);
int cmd_serve(int argc, char **argv);
