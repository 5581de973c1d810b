"""Support for the voice pipeline's tests: a scripted operator, a caller, a fake OpenAI API."""
