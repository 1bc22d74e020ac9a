# A valid configuration, so that only the option under test is wrong.
{ ... }: { }
