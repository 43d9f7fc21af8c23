# Thin wrapper over CMake: `make run` trains the car-evaluation model on the
# best device, `make test` runs the whole suite.
BUILD ?= build
CMAKE_FLAGS ?=
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all build run test bench clean install asan

all: build

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

# The seed program (the tutorial's recipe and split, and why it scores low), then the
# same data through `kiln train` and its default recipe.
run: build
	./$(BUILD)/car_evaluation data/car/car.csv
	@printf '\n== kiln train data/car/car.csv --target class (the default recipe)\n'
	./$(BUILD)/kiln train data/car/car.csv --target class

test: build
	ctest --test-dir $(BUILD) --output-on-failure -j $(JOBS)

bench: build
	bench/run_cpu.sh $(BUILD)

asan:
	$(MAKE) test BUILD=build-asan CMAKE_FLAGS="-DKILN_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug"

install: build
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) build-asan
