// Precompiled for every test program: Catch2 is most of their compile time.
#include <catch2/catch.hpp>
